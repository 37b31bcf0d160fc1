#!/bin/bash
# Train the dog-breed classifier once on this Deep Learning AMI instance, upload the model, power off.
# The instance terminates on shutdown, so a finished (or failed) run never leaves a GPU billing.
set -euo pipefail

REGION="__REGION__"
BUCKET="__BUCKET__"
CODE_PARAMETER="__CODE_PARAMETER__"
RUN_ID="__RUN_ID__"
MODEL_KEY="__EC2_MODELS_PREFIX__${RUN_ID}/model.tar.gz"
DESTINATION="s3://${BUCKET}/__EC2_MODELS_PREFIX__${RUN_ID}"
LOG_NAME="train.log"
WORK=/opt/dogbreeds
LOG=/var/log/dogbreeds-training.log

finish() {
  status=$?
  echo "run ${RUN_ID} ended with exit status ${status}"
  aws s3 cp "${LOG}" "${DESTINATION}/${LOG_NAME}" --region "${REGION}" --only-show-errors || true
  shutdown -h now
}
trap finish EXIT
exec > >(tee -a "${LOG}") 2>&1

# CloudFormation replaces this instance whenever its user data changes (a new run id, but also new code or
# hyperparameters) or its AMI does (the SSM parameter moves on to a newer Deep Learning AMI). A start that keeps
# the run id of a finished run must not train over that run's model: it stops here, and keeps that run's log.
found=$(aws s3api list-objects-v2 --bucket "${BUCKET}" --prefix "${MODEL_KEY}" --max-keys 1 \
  --query "Contents[0].Key" --output text --region "${REGION}" 2> /dev/null || true)
if [ "${found}" = "${MODEL_KEY}" ]; then
  LOG_NAME="skipped-$(date -u +%Y%m%dT%H%M%SZ).log"
  echo "run ${RUN_ID} already has a model (s3://${BUCKET}/${MODEL_KEY}): not training again;"
  echo "to train a new run, change the setting ec2_training_run_id and deploy the stack"
  exit 0
fi

# The code's S3 URI is read at start, not written here: a code change alone must not replace this instance.
CODE_URI=$(aws ssm get-parameter --name "${CODE_PARAMETER}" --query Parameter.Value --output text --region "${REGION}")
mkdir -p "${WORK}"/{code,data,model,output,pretrained,checkpoints}
aws s3 cp "${CODE_URI}" "${WORK}/code.tar.gz" --region "${REGION}" --only-show-errors
tar -xzf "${WORK}/code.tar.gz" -C "${WORK}/code"
aws s3 sync "s3://${BUCKET}/__DATASETS_PREFIX__" "${WORK}/data" --region "${REGION}" --only-show-errors
aws s3 sync "s3://${BUCKET}/__PRETRAINED_PREFIX__" "${WORK}/pretrained" --region "${REGION}" --only-show-errors

# The Deep Learning AMI's PyTorch environment.
source /opt/pytorch/bin/activate
pretrained=download
if compgen -G "${WORK}/pretrained/__BACKBONE__*.pth" > /dev/null; then
  pretrained="${WORK}/pretrained"
fi
python "${WORK}/code/train.py" \
  --data-dir "${WORK}/data" --model-dir "${WORK}/model" --output-dir "${WORK}/output" \
  --checkpoint-dir "${WORK}/checkpoints" --pretrained "${pretrained}" \
  __HYPERPARAMETERS__

tar -czf "${WORK}/model.tar.gz" -C "${WORK}/model" .
aws s3 cp "${WORK}/model.tar.gz" "${DESTINATION}/model.tar.gz" --region "${REGION}" --only-show-errors
aws s3 cp "${WORK}/output" "${DESTINATION}/output" --recursive --region "${REGION}" --only-show-errors
echo "model uploaded to ${DESTINATION}/model.tar.gz"
